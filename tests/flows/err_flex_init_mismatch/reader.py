"""A flex flow class whose init argument is typed as a connection: a name given becomes it."""




class Reader:
    def __init__(self, conn: str, prefix: str = ">"):
        self.conn = conn
        self.prefix = prefix

    def __call__(self, text: str):
        return {
            "type": type(self.conn).__name__,
            "is_openai_connection": False,
            "api_key": self.conn.api_key,
            "base_url_ends_with_v1": self.conn.base_url.endswith("/v1"),
            "text": f"{self.prefix} {text}",
        }
