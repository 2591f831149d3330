"""The naive baseline: V1 in PyTorch eager behind Python's single-threaded HTTP server, one
request at a time, no batching -- how a model is often first put online.

    python benchmarks/serving/naive_server.py CHECKPOINT_DIR PORT
"""
from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch

from yanjin.models.family import TOKENIZER_FILE, load_checkpoint
from yanjin.models.tokenizer import TextTokenizer


def main() -> None:
    ckpt, port = sys.argv[1], int(sys.argv[2])
    model, spec, labels = load_checkpoint(ckpt)
    tokenizer = TextTokenizer(f"{ckpt}/{TOKENIZER_FILE}", spec.max_length)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def reply(self, status: int, payload) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.reply(200, {"ok": True})

        def do_POST(self) -> None:
            items = json.loads(self.rfile.read(int(self.headers["content-length"])))["items"]
            ids, mask = tokenizer([i["text"] for i in items])
            with torch.inference_mode():
                probs = model(torch.from_numpy(ids), torch.from_numpy(mask)).softmax(-1)
            conf, idx = probs.max(-1)
            self.reply(200, [{"label": labels[i], "confidence": float(c)} for c, i in zip(conf, idx.tolist())])

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
