-- Every customer with a variant has exactly one message: none dropped (e.g. by rounding), none
-- doubled; holdout customers (no variant) and customers with no assignment have none.
-- Written as two anti joins and one count (not a three-way join grouped by customer), so at
-- 10,000,000 customers it stays within the target's memory_limit.
with sent as (
    select customer_id from {{ ref('assignments') }} where variant_id is not null
)

select customer_id, count(*) as messages
from {{ ref('messages') }}
group by customer_id
having count(*) > 1
union all
select s.customer_id, 0 as messages
from sent as s
anti join {{ ref('messages') }} as m using (customer_id)
union all
select m.customer_id, 1 as messages
from {{ ref('messages') }} as m
anti join sent as s using (customer_id)
