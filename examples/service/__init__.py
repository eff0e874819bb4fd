"""A traced model service (``app.py``) and a client that calls it with W3C trace context (``client.py``)."""
