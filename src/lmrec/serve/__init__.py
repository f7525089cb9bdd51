"""The real-time HTTP service: event store, retrieval and the FastAPI app.

This package stays import-light: `import lmrec.serve` loads no web framework, so the store and
retrieval modules can be used (and tested) without FastAPI. The app lives in `lmrec.serve.app`.
"""
