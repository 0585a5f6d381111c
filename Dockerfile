# syntax=docker/dockerfile:1
# sled-migration-tool as a container: build the addon and the TypeScript in a full image, ship
# only Node, the compiled CLI and the addon in a slim one that runs as a non-root user.

FROM node:20-bookworm AS build
# Rust for the napi addon (the final image has no compiler).
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY Cargo.toml Cargo.lock tsconfig.json ./
COPY crates ./crates
COPY src ./src
COPY native ./native
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production MIGRATION_DIR=/migration
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/lib ./lib
COPY --from=build /src/native ./native
# The bot's volume is usually owned by the bot's user: run as an unprivileged user and let the pod
# choose the uid (securityContext.runAsUser) that owns the volume.
RUN mkdir -p /migration && chown 1000:1000 /migration && chmod 0700 /migration
USER 1000:1000
VOLUME ["/migration"]
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/lib/cli.js"]
CMD ["--help"]
