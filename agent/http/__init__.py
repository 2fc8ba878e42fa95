"""The agent's HTTP front end: the first stop of an inference request over REST.

``server`` accepts connections and ``conn`` parses HTTP/1.1 on each (keep-alive, limits);
``routes`` is the table from (method, path) to handler for the Open Inference Protocol v2
endpoints, whose request and response bodies (JSON and the binary tensor extension) ``codec``
decodes and encodes, tensor by tensor through ``tensors``. ``tfserving`` adds TensorFlow
Serving's REST API, ``openapi`` describes the endpoints. Handlers call
:class:`edgeserve.agent.serving.core.Agent`, which runs the model
(:mod:`edgeserve.agent.serving`).
"""
