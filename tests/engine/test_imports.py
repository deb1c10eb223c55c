"""heavy_imports pauses the cyclic collector and restores it, whatever it was."""

import gc

from engine.imports import heavy_imports


def test_collector_paused_then_restored_and_import_objects_frozen():
    try:
        assert gc.isenabled()
        with heavy_imports():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]  # stands in for what an import creates
        assert gc.isenabled() and gc.get_freeze_count() >= len(made)

        gc.disable()
        with heavy_imports():
            pass
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
        gc.unfreeze()
