"""Name -> object registries (trainers, datasets, evaluators)."""


class Registry:
    """Maps the ``__name__`` of registered objects to the objects.

    Usable as a decorator (``@REG.register()``) or called directly (``REG.register(cls)``).
    """

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:
            def decorator(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class
            return decorator
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(f'Object name "{name}" does not exist in "{self._name}" registry')
        return self._obj_map[name]

    def registered_names(self):
        return list(self._obj_map.keys())

    def __contains__(self, name):
        return name in self._obj_map
