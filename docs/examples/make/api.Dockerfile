FROM scratch
# Shared by the three images: one layer, stored once.
COPY shared/ /etc/example/
COPY api.txt /app/api.txt
LABEL org.opencontainers.image.title=api
CMD ["/app/api"]
