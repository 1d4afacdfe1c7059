from promptflow.core import tool


@tool
def conversions(
    int_from_float: int,
    int_from_padded_str: int,
    float_from_exp: float,
    float_from_int_str: float,
    str_from_list: str,
    str_from_bool: str,
    str_from_float: str,
    obj_from_non_json: dict,
    obj_from_json_list: dict,
    obj_from_number_str: dict,
    list_from_json_nested: list,
    empty_str_uses_default: str = "DEFAULT-EMPTY",
    null_uses_default: str = "DEFAULT-NULL",
) -> dict:
    values = dict(locals())
    return {name: {"type": type(v).__name__, "repr": repr(v)} for name, v in values.items()}
