import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "animalsite.settings")
application = get_asgi_application()
gc.freeze()  # as wsgi.py, for the same reason
