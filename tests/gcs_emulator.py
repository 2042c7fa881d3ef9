"""A local Google Cloud Storage emulator for the `gs://` tests, in this process, reachable by gcsfs (paths),
google-cloud-storage and tensorstore (Orbax), and by the entry points the tests launch (they inherit the
environment)."""

import os
import socket
from http import HTTPStatus


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _add_move_route(server_module) -> None:
  """gcsfs renames with the objects.moveTo call, which the emulator lacks (it would retry ~30 s, then copy)."""
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  def move(request, response, storage, *args, **kwargs):
    del args, kwargs
    p = request.params
    try:
      moved = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"],  # pylint: disable=protected-access
                            p["bucket_name"], p["dest_object_id"])
      storage.delete_file(p["bucket_name"], p["object_id"])
      response.json(moved)
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND

  pattern = r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$"
  if pattern not in [route for route, _ in server_module.HANDLERS]:
    server_module.HANDLERS = ((pattern, {"POST": move}),) + tuple(server_module.HANDLERS)


def _add_generation_headers(server_module) -> None:
  """Object reads answer with the object's generation, as GCS does (tensorstore's OCDBT reads it from the headers
  to write the manifest conditionally; without it every Orbax save fails with "Malformed StorageGeneration")."""
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  def with_generation(original):
    def handler(request, response, storage, *args, **kwargs):
      original(request, response, storage, *args, **kwargs)
      if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        try:
          obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # pylint: disable=broad-except  # the original already answered the error
          return
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
    handler.adds_generation = True
    return handler

  wrapped = {fn: with_generation(fn) for fn in (objects.download, objects.get)
             if not getattr(fn, "adds_generation", False)}
  server_module.HANDLERS = tuple(
      (route, {verb: wrapped.get(fn, fn) for verb, fn in verbs.items()}) for route, verbs in server_module.HANDLERS)


def _deepen_backlog(server_module) -> None:
  """The emulator answers one request at a time from a listen backlog of 5: a client that opens more connections
  at once (tensorstore writing a checkpoint's arrays) gets them reset. A deep backlog queues them instead."""
  import functools  # pylint: disable=g-import-not-at-top
  from http import server as http_server  # pylint: disable=g-import-not-at-top

  class QueueingServer(http_server.HTTPServer):
    request_queue_size = 1024

  def run(thread):
    thread._httpd = QueueingServer((thread._host, thread._port),  # pylint: disable=protected-access
                                   functools.partial(server_module.RequestHandler, thread._storage))  # pylint: disable=protected-access
    thread.is_running.set()
    thread._httpd.serve_forever()  # pylint: disable=protected-access

  server_module.APIThread.run = run


def start(bucket: str = "bucket"):
  """Starts the emulator with an empty in-memory `bucket` and points every GCS client at it. Returns the server."""
  from gcp_storage_emulator import server as server_module  # pylint: disable=g-import-not-at-top

  _add_move_route(server_module)
  _add_generation_headers(server_module)
  _deepen_backlog(server_module)
  port = _free_port()
  server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  server.start()
  url = f"http://127.0.0.1:{port}"
  os.environ.update({
      "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
      "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (Orbax's array files)
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake",  # tensorstore: no credential lookup
      "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credential lookup
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "EPATH_USE_TF": "false",
      # The emulator serves one request at a time and garbles answers to concurrent ones (tensorstore then reports
      # "Malformed StorageGeneration"); a real bucket needs no such limit.
      "TENSORSTORE_GCS_REQUEST_CONCURRENCY": "1",
  })
  return server
