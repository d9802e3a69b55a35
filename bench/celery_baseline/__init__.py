"""The original design, as a baseline: Celery on Redis, a gevent pool of 50 running boto3.

Runs from its own venv (``bench/celery_baseline/.venv``, see ``requirements.txt``); the main
benchmark starts ``celery -A bench.celery_baseline.tasks worker`` and drives it with
``python -m bench.celery_baseline.produce``.
"""
