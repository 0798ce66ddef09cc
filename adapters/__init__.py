"""refloss.adapters: framework glue (torch autograd, JAX custom_vjp).

The only place in refloss that imports a framework, and it holds no math:
each adapter wraps the core's forward and analytic VJP. The adapters
themselves are not written yet (see the project's issues); this package
exists so that the layout — core in ``refloss/``, glue in
``refloss.adapters`` — is fixed from the start.
"""
