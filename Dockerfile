# The converge agent image: the converge binary plus git and OpenSSH's client,
# which internal/source drives (see docs/design/git.md).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X converge.dev/converge/internal/version.Version=${VERSION} -X converge.dev/converge/internal/version.Commit=${COMMIT}" \
      -o /out/converge ./cmd/converge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --user-group --no-create-home converge
COPY --from=build /out/converge /usr/local/bin/converge
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/converge"]
CMD ["agent", "--leader-elect"]
