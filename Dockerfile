# The careplane manager image: a static binary on distroless, running as
# nonroot. The project's machines have no Docker engine; `make
# build-image-binary` builds the same binary with the same flags.
FROM golang:1.26 AS build
ARG VERSION=dev
WORKDIR /src
ENV GOTOOLCHAIN=local CGO_ENABLED=0 GOOS=linux
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN go build -trimpath \
    -ldflags "-s -w -X github.com/careplane/careplane/internal/version.Version=${VERSION}" \
    -o /out/manager ./cmd/manager

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
