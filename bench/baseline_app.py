"""The baseline: what a user would write instead of imgclass, kept only for comparison.

A tutorial-style Flask app: PyTorch model loaded at import, each request
decoded at full size with Pillow, normalised in NumPy, run through PyTorch
with its default threads, and logged through a fresh sqlite3 connection.
Served by gunicorn with one sync worker per CPU and one torch thread each
(bench/run.py starts it that way).

    BASELINE_DB=/tmp/baseline.db OMP_NUM_THREADS=1 gunicorn -w 2 -b 127.0.0.1:8100 \
        bench.baseline_app:app
"""

from __future__ import annotations

import os
import sqlite3
import time

import numpy as np
import torch
from flask import Flask, jsonify, request
from PIL import Image

from imgclass.vision.export import load_torch_model
from imgclass.vision.labels import imagenet_labels

app = Flask(__name__)
model = load_torch_model()
labels = imagenet_labels().names
DB = os.environ.get("BASELINE_DB", "baseline.db")
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def preprocess(image: Image.Image) -> torch.Tensor:
    image = image.convert("RGB")
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)))
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    array = (np.asarray(image) / 255.0 - MEAN) / STD
    return torch.tensor(array.transpose(2, 0, 1), dtype=torch.float32).unsqueeze(0)


@app.post("/predict")
def predict():
    started = time.time()
    file = request.files["image"]
    image = Image.open(file.stream)
    with torch.no_grad():
        probs = torch.softmax(model(preprocess(image))[0], 0)
    score, index = probs.max(0)
    conn = sqlite3.connect(DB)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS requests (ts REAL, filename TEXT, class TEXT, ms REAL)"
    )
    conn.execute(
        "INSERT INTO requests VALUES (?, ?, ?, ?)",
        (started, file.filename, labels[int(index)], (time.time() - started) * 1000),
    )
    conn.commit()
    conn.close()
    return jsonify(label=labels[int(index)], score=float(score))
