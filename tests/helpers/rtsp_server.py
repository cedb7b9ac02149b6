"""A loopback RTSP server: `python3 rtsp_server.py PORT CLIP.mp4 MOUNT...` (GStreamer's gst-rtsp-server).

Run by the *system* Python (python3-gi lives there, not in the venv); prints `ready` once listening.
Each mount streams the H.264 mp4 `CLIP` in real time (the payloader's timestamps pace it), from its
start for each new client, so a restarted server is a source coming back.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, clip, mounts = sys.argv[1], sys.argv[2], sys.argv[3:] or ["s"]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
for mount in mounts:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( filesrc location={clip} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    server.get_mount_points().add_factory(f"/{mount}", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
