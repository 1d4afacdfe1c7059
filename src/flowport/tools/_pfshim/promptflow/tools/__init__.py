"""``promptflow.tools``: the parts of promptflow-tools that flow code imports."""
