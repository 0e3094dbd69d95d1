"""Installing aegisd as a service: the systemd and launchd definitions it writes.

``service_files`` renders the same-uid user units and LaunchAgent, ``system_service_files``
the separated-mode system units and LaunchDaemon. Text only: the install steps that run
commands live in ``aegisctl`` (``cli/aegisctl/service.py``, ``system_install.py``).
"""
