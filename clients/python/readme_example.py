from kv_store_client import Client
from kv_store_client.api.keys import get_key, put_key

kv = Client(base_url="http://localhost:3000")
put_key.sync_detailed("greeting", client=kv, body="hello from Python")
print(get_key.sync("greeting", client=kv))  # hello from Python
