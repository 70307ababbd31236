# One image for every EZ-API process of docker-compose.yml (migrate, background,
# fcgi, nginx). The supported and tested path is `make run`; this image builds
# the same release binaries with Debian 12's packages (scripts/install-deps
# lists them). Build: docker build -t ezapi .
FROM debian:bookworm

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends \
        build-essential pkg-config ca-certificates \
        libfcgi-dev libpq-dev libhiredis-dev libcjson-dev libinih-dev libzmq3-dev \
        libssl-dev libcurl4-openssl-dev \
        postgresql-client nginx-light python3 nodejs npm \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .
# Release build (no sanitizers) and the Swagger UI files nginx serves from node_modules/.
RUN make build && scripts/install-swagger

# Each service sets its own command; nothing runs as root but nginx's master.
RUN useradd --system --home /app ezapi && mkdir -p /app/data/spool && chown -R ezapi /app/data
