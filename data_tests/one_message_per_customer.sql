-- Every customer has exactly one message: none dropped (e.g. by rounding), none doubled.
select c.customer_id, count(m.customer_id) as messages
from {{ ref('stg_customers') }} as c
left join {{ ref('messages') }} as m using (customer_id)
group by c.customer_id
having count(m.customer_id) <> 1
