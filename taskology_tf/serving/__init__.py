"""Publishing and serving task networks: versioned atomic SavedModel export, a model server speaking
TF Serving's gRPC API (``server``), its tensor codec and a client. A real ``tensorflow_model_server``
can serve the same ``<base>/<version>/`` folders."""
