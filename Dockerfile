# One image for every app service of docker-compose.yml: web (gunicorn), the Celery workers
# and beat differ only by their command.
FROM python:3.11-slim

# Settings find templates/, static/ and demo/ next to the code (BASE_DIR), so the source
# tree in /app comes first on the path (PYTHONPATH), before the installed copy.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=animalsite.settings \
    VAR_DIR=/var/lib/animalsite \
    MEDIA_ROOT=/var/lib/animalsite/media \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first (torch and torchvision are pinned in pyproject.toml), in their own layer,
# so that a code change does not download torch again.
COPY pyproject.toml ./
# The s3 extra (django-storages) lets multi-node deployments set MEDIA_STORAGE to an object store.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['s3']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . && rm -rf build *.egg-info

RUN groupadd --system --gid 1000 animalsite \
    && useradd --system --uid 1000 --gid animalsite --home-dir /var/lib/animalsite --shell /usr/sbin/nologin animalsite \
    && mkdir -p /var/lib/animalsite/media \
    && chown -R animalsite:animalsite /var/lib/animalsite

USER animalsite

# Static files are collected into the image (whitenoise serves them). The key and the broker
# URL only let settings load; they are not used at run time (SECRET_KEY comes from the
# environment and DEBUG=0 refuses to start without it).
RUN SECRET_KEY=build-time-dummy-not-used-at-run-time DEBUG=0 CELERY_BROKER_URL=redis://build-only:6379/0 \
    python manage.py collectstatic --no-input

EXPOSE 8000

# Workers come from WEB_CONCURRENCY (read by gunicorn itself).
CMD ["gunicorn", "animalsite.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
