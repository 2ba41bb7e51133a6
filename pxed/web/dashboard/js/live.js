// The live stream (GET /events/stream, server-sent events): the browser
// sends the session cookie and reconnects by itself.  Each page opens the
// stream it needs and closes it when it is left.

export function follow(query, handlers) {
  const search = new URLSearchParams(query).toString();
  const source = new EventSource(`/events/stream${search ? `?${search}` : ""}`, { withCredentials: true });
  for (const kind of ["event", "log", "progress", "build-log"]) {
    if (!handlers[kind]) continue;
    source.addEventListener(kind, (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (_) { return; }
      handlers[kind](data);
    });
  }
  return () => source.close();
}
