"""The MQTT broker side of a fleet: the files Mosquitto needs, and a broker to run in-process.

Devices and the server meet on the broker: the server publishes each device's signed desired
state (retained) and reads what devices report; every device may only touch its own topics.

- ``passwords``: Mosquitto password files (``$7$`` PBKDF2 hashes; the store keeps only those).
- ``acl``: the fleet's ACL (each device confined to its own topics), and reading one back.
- ``files``: writing the password file, ACL and ``mosquitto.conf`` for a fleet.
- ``embedded``: a broker for one machine: Mosquitto when installed, else amqtt in a thread.
- ``amqtt_broker``: the amqtt plugins that read the same password and ACL files.
- ``status``: what the server knows and logs about its broker connection (down, retrying,
  back).
"""
