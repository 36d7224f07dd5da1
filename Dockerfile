# One image for the API, the worker and the simulator (docker-compose picks the command).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY api api
COPY workflows workflows
COPY activities activities
COPY report report
COPY upkeep upkeep
COPY simulator simulator
# Packaged with the rest (pyproject lists them), though the image runs neither.
COPY devstack devstack
COPY bench bench
COPY migrations migrations
COPY alembic.ini worker.py ./
COPY temporal-config temporal-config
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["uvicorn", "api.main:create_configured_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
