"""The emulator's service API on a loopback HTTP port, for the `aziot` command line.

Paths and bodies follow the IoT Hub service REST API where it is simple
to do so (direct methods, twins); C2D takes a JSON body instead of the
AMQP message the real service uses:

  POST  /twins/{device}[/modules/{module}]/methods   {"methodName", "payload", "responseTimeoutInSeconds"}
  GET   /twins/{device}[/modules/{module}]
  PATCH /twins/{device}[/modules/{module}]           {"properties": {"desired": {...}}}
  POST  /devices/{device}/messages/deviceBound       {"payload", "properties", "messageId", "correlationId",
                                                      "contentType", "contentEncoding"}
  GET   /devices/{device}/messages/deviceBound       the messages still queued for the device
"""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE_FILE = "service.json"  # in the state directory: where a running emulator's service API listens


def _route(path: str):
    """(kind, device, module) for a request path; kind None when nothing matches."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) >= 2 and parts[0] == "twins":
        device, rest = parts[1], parts[2:]
        module = ""
        if len(rest) >= 2 and rest[0] == "modules":
            module, rest = rest[1], rest[2:]
        if rest == ["methods"]:
            return "method", device, module
        if rest == []:
            return "twin", device, module
    if len(parts) == 4 and parts[0] == "devices" and parts[2:] == ["messages", "deviceBound"]:
        return "c2d", parts[1], ""
    return None, None, None


class _Handler(BaseHTTPRequestHandler):
    hub = None  # set per server class

    def log_message(self, fmt, *args):
        pass  # the emulator logs the operations themselves

    def _reply(self, status: int, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            raise ValueError("request body is not JSON")
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        return body

    def _dispatch(self, method: str):
        kind, device, module = _route(self.path)
        try:
            if (kind, method) == ("method", "POST"):
                body = self._body()
                if not body.get("methodName"):
                    raise ValueError("methodName is required")
                result = self.hub.invoke_method(device, body["methodName"], body.get("payload"),
                                                float(body.get("responseTimeoutInSeconds", 30)), module)
                # The device's status (or the hub's 404/504) is in the body, as the service API returns it.
                return self._reply(200, {"status": result.status, "payload": result.payload})
            if (kind, method) == ("twin", "GET"):
                return self._reply(200, self.hub.get_twin(device, module))
            if (kind, method) == ("twin", "PATCH"):
                desired = self._body().get("properties", {}).get("desired")
                if not isinstance(desired, dict):
                    raise ValueError("body must be {\"properties\": {\"desired\": {...}}}")
                self.hub.update_desired(device, desired, module)
                return self._reply(200, self.hub.get_twin(device, module))
            if (kind, method) == ("c2d", "POST"):
                body = self._body()
                payload = body.get("payload", "")
                payload = json.dumps(payload) if not isinstance(payload, str) else payload
                mid = self.hub.send_c2d(device, payload.encode(), body.get("properties") or {},
                                        message_id=body.get("messageId"), correlation_id=body.get("correlationId"),
                                        content_type=body.get("contentType"),
                                        content_encoding=body.get("contentEncoding"))
                return self._reply(200, {"messageId": mid})
            if (kind, method) == ("c2d", "GET"):
                return self._reply(200, [{"messageId": m.message_id, "deliveries": m.deliveries}
                                         for m in self.hub.c2d_pending(device)])
            return self._reply(404, {"error": "no such operation: %s %s" % (method, self.path)})
        except Exception as e:  # every failure is the caller's answer, never a dead thread
            return self._reply(400, {"error": str(e)})

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")


class ServiceHttp:
    """Serves hub's service API on host:port (0: any free port) in a thread; writes service.json."""

    def __init__(self, hub, host: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"hub": hub})
        self._server = ThreadingHTTPServer((host, port), handler)
        self.url = "http://%s:%d" % self._server.server_address[:2]
        self._path = os.path.join(hub.state_dir, SERVICE_FILE)
        self._thread = threading.Thread(target=self._server.serve_forever, name="aziot-service", daemon=True)

    def __enter__(self):
        self._thread.start()
        with open(self._path, "w") as f:
            json.dump({"url": self.url}, f)
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        if os.path.exists(self._path):
            os.remove(self._path)
