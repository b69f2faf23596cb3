# One image for every component: noti operator | gateway | sender | migrate | apns-sim.
# tests/test_image.py checks it without an engine: it parses, runs as a numeric non-root user,
# installs only what constraints.txt pins, and every command the chart and operator run exists.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY noti ./noti
COPY gateway ./gateway
COPY sender ./sender
COPY operator ./operator
COPY crds ./crds
# With the tracing extra, so NOTI_TRACING_ENABLED works in a cluster (off unless set).
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels ".[tracing]"

FROM python:3.11-slim
# The chart's pods run as uid/gid 10001 (podSecurityContext) with a read-only root filesystem.
RUN groupadd --system --gid 10001 noti && useradd --system --uid 10001 --gid 10001 --home /nonexistent noti
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "noti[tracing]" && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["noti"]
CMD ["--help"]
