"""Images from a URL and in the formats people have: fetching over HTTP(S)
within limits (fetch, addresses), recognising and converting qcow2, VMDK,
VHDX and xz to the raw disk pxed stores (formats), and the background jobs
that do it and report on the image's events (service)."""
