import os

from django.core.wsgi import get_wsgi_application

from animalsite.warm import freeze_loaded_site

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "animalsite.settings")
application = get_wsgi_application()
freeze_loaded_site()
