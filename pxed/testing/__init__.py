"""Support for pxed's own tests and benchmarks; the server never imports it."""
