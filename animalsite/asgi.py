import os

from django.core.asgi import get_asgi_application

from animalsite.warm import freeze_loaded_site

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "animalsite.settings")
application = get_asgi_application()
freeze_loaded_site()
