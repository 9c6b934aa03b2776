"""`seqlab serve`: translation and generation over HTTP (FastAPI + uvicorn), with a web page.

- `app.py`: the endpoints, limits, API key and error answers; `schemas.py`: the typed request/response bodies;
- `batching.py`: the worker thread and the dynamic batcher of translate requests;
- `metrics.py`: counters and latency percentiles in the Prometheus text format;
- `models.py`: loading the checkpoints named on the command line; `static/index.html`: the page at `/`.
"""

from seqlab.serve.app import ServeLimits, ServeSettings, create_app
from seqlab.serve.models import load_served_models

__all__ = ["ServeLimits", "ServeSettings", "create_app", "load_served_models"]
