FROM scratch
# Shared by the three images: one layer, stored once.
COPY shared/ /etc/example/
COPY worker.txt /app/worker.txt
LABEL org.opencontainers.image.title=worker
CMD ["/app/worker"]
