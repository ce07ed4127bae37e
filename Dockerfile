# One image for every process of resonance: `resonance operator`, `resonance bridge`, `resonance node serve`.

FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge/ bridge/
COPY operator/ operator/
COPY local/ local/
# The project and everything its processes need: bridges the base install, the operator its extra
# (the demo's `resonance node serve` needs nothing more); not the laptop tools' rich and broker.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

FROM python:3.11.7-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="resonance" \
      org.opencontainers.image.description="Kubernetes operator and Kafka <-> WebSocket bridges for Resonance nodes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/resonance-io/resonance"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "resonance[operator]==${VERSION}" \
 && rm -rf /wheels
# The numeric user the operator's pod security context expects (runAsUser 10001).
USER 10001:10001
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 8081
ENTRYPOINT ["resonance"]
CMD ["operator"]
