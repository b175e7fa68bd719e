# syntax=docker/dockerfile:1
# Baton: one image for the web process (gunicorn), the Celery worker and Celery beat.
# Pinned to a patch release and a Debian release: a rebuild gets the same interpreter and OS.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATON_VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

RUN groupadd --system --gid 10001 baton \
    && useradd --system --uid 10001 --gid baton --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin baton

# Dependencies first, so that code changes do not reinstall them.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY . .

# Collect static files into the image. Production settings are used so that the
# manifest that CompressedManifestStaticFilesStorage needs at run time is written
# (development settings use the plain storage, which writes no manifest). The
# SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL and EVIDENCE_SIGNING_KEY below exist only for this
# step, which neither signs, nor connects, nor checks the key: none is kept in the image.
ARG BUILD_SECRET_KEY=collectstatic-build-step-only-not-a-secret
RUN BATON_ENV=production \
    SECRET_KEY="${BUILD_SECRET_KEY}" \
    ALLOWED_HOSTS=build.invalid \
    DATABASE_URL=sqlite:////tmp/baton-build/unused.sqlite3 \
    EVIDENCE_SIGNING_KEY=collectstatic-build-step-only-not-a-key \
    BATON_VAR_DIR=/tmp/baton-build \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/baton-build

# The directories Baton writes to. A named volume mounted on a directory of the image starts
# with that directory's owner: without /app/exports here, docker-compose's evidence-exports
# volume would belong to root and the worker could not write evidence packages into it.
RUN mkdir -p /app/var /app/exports && chown baton:baton /app/var /app/exports

USER baton

EXPOSE 8000

CMD ["gunicorn", "controlplane.wsgi:application", "--bind", "0.0.0.0:8000"]
