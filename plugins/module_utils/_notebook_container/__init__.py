# Copyright: Wyvern workbench team
# Apache-2.0
"""The notebook container, private to wyvern.workbench (module ``notebook_container``).

Layers, each importing only the ones listed after it:

- ``manager``: ``NotebookContainer`` runs one module call: plan, apply, health, GPU check.
- ``engine``: the Docker SDK calls (connect, create, start, network, logs, probe exec).
- ``health``: Jupyter's HTTP status, container states, crash-loop detection.
- ``host``: files on the managed host (token file, its read-only copy, port file) and
  whether a port is free.
- ``spec``: pure: options and ``docker inspect`` data -> desired and observed spec, drift,
  the plan, the port choice; no I/O, so check mode is the plan alone.
- ``common``: ``NotebookError`` and the mask for secrets.

The GPU rule (``_gpu.py``) is shared with ``gpu_info``; ``manager`` uses it.
"""
