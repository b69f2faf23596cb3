# One image for every component: noti operator | gateway | sender | migrate | apns-sim.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY noti ./noti
COPY gateway ./gateway
COPY sender ./sender
COPY operator ./operator
COPY crds ./crds
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /nonexistent noti
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels noti && rm -rf /wheels
USER 10001
ENTRYPOINT ["noti"]
CMD ["--help"]
