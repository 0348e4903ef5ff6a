"""Jupyter server configuration for the end-to-end tests (used by e2e/run.sh only).

Galata's helper adds its test extension and exposes the app in the page; on top of it
we bind to 127.0.0.1 with a token (passed by the tests as an ``Authorization`` header),
on the port and root folder chosen by run.sh, and silence the news pop-up.
"""

import os

from jupyterlab.galata import configure_jupyter_server

c = get_config()  # noqa: F821 (provided by Jupyter)
configure_jupyter_server(c)

c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = int(os.environ["E2E_PORT"])
c.ServerApp.port_retries = 0
c.ServerApp.open_browser = False
c.ServerApp.allow_root = True
c.ServerApp.root_dir = os.environ["E2E_ROOT_DIR"]
c.IdentityProvider.token = os.environ["E2E_TOKEN"]
c.LabApp.workspaces_dir = os.environ["E2E_WORKSPACES_DIR"]
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
# run.sh stops the server when the tests end; this is only a safety net for a runner that was
# SIGKILLed: a server with no activity (API calls, kernel messages) for 30 min stops itself.
c.ServerApp.shutdown_no_activity_timeout = 1800
c.MappingKernelManager.shutdown_wait_time = 2.0
