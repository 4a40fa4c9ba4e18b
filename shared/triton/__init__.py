"""Models on Triton Inference Server: the client, the server process, the model repository.

* :mod:`winnow.shared.triton.contract` - tensor names, the inputs and outputs of each model kind, wire formats
* :mod:`winnow.shared.triton.client` - ``TritonClient`` and its exceptions
* :mod:`winnow.shared.triton.remote` - the model interfaces of :mod:`winnow.shared.models.base`, served by Triton
* :mod:`winnow.ops.triton.repository` - ``ModelSpec`` and ``write_model_repository``
* :mod:`winnow.shared.triton.python_model` - the python-backend model every generated ``model.py`` runs
* :mod:`winnow.ops.triton.server` - the ``tritonserver`` binary from the ``nvidia-pytriton`` wheel

Nothing is imported here: the python backend imports this package inside Triton, where only the
contract and the model runtime are needed.
"""
