# Multi-stage build of a static conntrace_exporter. The BPF objects are
# generated and committed (bpf/), so the build needs no clang.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /conntrace_exporter .

FROM gcr.io/distroless/static-debian12
COPY --from=build /conntrace_exporter /bin/conntrace_exporter
EXPOSE 9476
USER 0
ENTRYPOINT ["/bin/conntrace_exporter"]
