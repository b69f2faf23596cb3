"""``noti dev``: its command (cli), the stack (stack), its data directory (datadir), the embedded Redis
(embedded_redis) and its memory care (memory)."""
