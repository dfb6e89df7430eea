# Jupyter server settings of the Wyvern workbench image (/etc/jupyter/jupyter_server_config.py).
#
# Jupyter refuses requests whose Host header is neither a loopback address nor
# `localhost` (its defence against DNS rebinding), unless allow_remote_access is on.
# wyvern.workbench.notebook_container turns it on (WYVERN_ALLOW_REMOTE_ACCESS=1) only when
# the notebook is published on a non-loopback address on purpose (allow_public_bind),
# since browsers elsewhere then send the host's address as Host.
import contextlib
import os

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file
c.ServerApp.allow_remote_access = os.environ.get("WYVERN_ALLOW_REMOTE_ACCESS") == "1"
# Where Jupyter listens. On the container's own network: every address of the container,
# port 8888 (Docker forwards the port it publishes on the host's loopback there). On the
# host's network (a node of a workbench spanning machines, for NCCL and the rendezvous),
# notebook_container sets the host's loopback and the notebook's port here instead, so
# that nothing but the host itself reaches Jupyter.
c.ServerApp.ip = os.environ.get("WYVERN_JUPYTER_IP") or "0.0.0.0"
c.ServerApp.port = int(os.environ.get("WYVERN_JUPYTER_PORT") or 8888)
c.ServerApp.port_retries = 0  # the port asked for, or fail: never a neighbour's port
# The token comes from the file named by JUPYTER_TOKEN_FILE (a read-only mount), never
# from the environment, so kernels and terminals do not inherit it.

# The user's work lives in /workspace/notebooks (a persistent folder that
# playbooks/sync.yml keeps in step with the project's notebooks/ on the control node):
# JupyterLab's file browser opens there. The folder is made when missing (a container
# started without the workbench's mounts), since Jupyter refuses a preferred_dir that
# does not exist.
NOTEBOOKS_DIR = "/workspace/notebooks"
with contextlib.suppress(OSError):
    os.makedirs(NOTEBOOKS_DIR, exist_ok=True)
if os.path.isdir(NOTEBOOKS_DIR):
    c.ContentsManager.preferred_dir = "notebooks"

# Nothing reaches the internet on its own: no news feed, no update check against PyPI,
# no extension manager listing PyPI. The announcements plugin (the "get notified about
# official Jupyter news?" prompt) is disabled in /etc/jupyter/labconfig/page_config.json.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"
