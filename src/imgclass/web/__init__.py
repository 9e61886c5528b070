"""The pages people use in a browser: ``/`` (classify a photo) and ``/dashboard`` (analytics).

Templates are in ``templates/``, CSS and plain ES modules in ``static/``; the charting
library is a vendor file that ``make install`` copies from the npm registry's package into
``static/vendor/`` (see docs/ARCHITECTURE.md, "Web pages").
"""
