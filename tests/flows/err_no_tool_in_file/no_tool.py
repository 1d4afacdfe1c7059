def not_a_tool(value):
    return value
