"""Tasks: what a model of each task must offer and the pipeline that runs any such model (``task2``)."""
