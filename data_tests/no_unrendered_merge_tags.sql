select customer_id, variant_id
from {{ ref('messages') }}
where subject like '%{{ "{{" }}%' or body like '%{{ "{{" }}%'
   or subject like '%{{ "{%" }}%' or body like '%{{ "{%" }}%'
