"""The data plane: the gateway and the runtime's instances, in a process of their own.

``flowport server`` runs this process on the public port. It serves scoring itself and hands
every other path to the control plane, a child process it restarts when it dies; the control
plane drives it through a private API on a Unix socket (``agent.py``, ``client.py``). So
registering a large model, a slow database or a control-plane crash never stalls scoring.
"""
