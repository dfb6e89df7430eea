# Jupyter server settings of the Wyvern workbench image (/etc/jupyter/jupyter_server_config.py).
#
# Jupyter refuses requests whose Host header is neither a loopback address nor
# `localhost` (its defence against DNS rebinding), unless allow_remote_access is on.
# wyvern.workbench.notebook_container turns it on (WYVERN_ALLOW_REMOTE_ACCESS=1) only when
# the notebook is published on a non-loopback address on purpose (allow_public_bind),
# since browsers elsewhere then send the host's address as Host.
import os

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file
c.ServerApp.allow_remote_access = os.environ.get("WYVERN_ALLOW_REMOTE_ACCESS") == "1"
# The token comes from the file named by JUPYTER_TOKEN_FILE (a read-only mount), never
# from the environment, so kernels and terminals do not inherit it.
