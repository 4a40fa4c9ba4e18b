"""Running Triton here: the ``tritonserver`` launcher and the generated model repository.

The client side (``winnow.shared.triton``: contract, remote models, python-backend model) stays in the library.
"""
