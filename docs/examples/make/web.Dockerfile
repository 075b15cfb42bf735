FROM scratch
# Shared by the three images: one layer, stored once.
COPY shared/ /etc/example/
COPY web.txt /app/web.txt
LABEL org.opencontainers.image.title=web
CMD ["/app/web"]
