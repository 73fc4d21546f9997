"""`mprnet serve`: restoration over HTTP, with a web page.

* `engine.py`: no web stack. One network per task (`Lane`), loaded once in its own thread
  and fed from a bounded queue; the per-request decode and encode (the CLI's faithful-file
  rules: `imageio.read_image` and `imageio.encode_image`); Prometheus metrics.
* `app.py`: the only importer of FastAPI, Starlette and uvicorn: routes, limits, tokens,
  error bodies, shutdown. `page.html` (the page at `/`) and `docs.html` (the API at
  `/docs`) are self-contained: no CDN, since the machines that run this may be offline.

The web stack is the `serve` extra (`pip install 'mprnet-cli[serve]'`); nothing here is
imported by `mprnet --help` or by the restore commands.
"""
