"""The REST API of the classifier app: images (upload, read), training runs and the model
registry, batch jobs. Errors raised by services become JSON answers in errors.py."""
