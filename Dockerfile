# Passerelle: the supervisor and every network in one image.
#   docker build -t passerelle .
#   docker run --network host -v /etc/passerelle:/etc/passerelle:ro \
#       -v passerelle-data:/var/lib/passerelle passerelle
# The configuration is mounted at /etc/passerelle/gateway.toml, readable by uid 10001
# (see examples/gateway.toml; data_dir must be /var/lib/passerelle). --network host
# lets it reach an XMPP server listening on the host's loopback; compose.yaml instead
# runs it next to a Prosody container.
FROM python:3.11-slim-bookworm

# slidge identifies attachment types with libmagic.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

# The same uv as development, installing exactly the versions in uv.lock.
RUN pip install --no-cache-dir uv==0.13.8
ENV UV_PROJECT_ENVIRONMENT=/opt/passerelle/.venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

WORKDIR /opt/passerelle
# Dependencies first, so that editing the code does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY gateway ./gateway
COPY legacy_plugins ./legacy_plugins
COPY examples ./examples
# For PostgreSQL storage, add: --extra postgres
RUN uv sync --locked --no-dev --no-editable

# Run as an unprivileged user; /var/lib/passerelle is its data_dir (a volume).
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/passerelle \
        --shell /usr/sbin/nologin passerelle \
    && install -d -o passerelle -g passerelle -m 750 /var/lib/passerelle
USER passerelle
WORKDIR /var/lib/passerelle
VOLUME ["/var/lib/passerelle"]
ENV PATH=/opt/passerelle/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1

# SIGTERM (docker stop) makes the supervisor stop every network cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["passerelle"]
CMD ["run", "-c", "/etc/passerelle/gateway.toml"]
