"""Vision: decode and validate images, preprocess them, run the classifier. No Flask, no SQL."""
