{{ config(materialized='table', tags=['segments']) }}
{%- set rules = var('segmentation.rules') %}

-- Classic RFM segments with thresholds from vars.segmentation.rules. The CASE is ordered:
-- a customer gets the first segment whose rule matches, and the ELSE makes the cover complete.
with features as (
    select * from {{ ref('customer_features') }}
),

assigned as (
    select
        customer_id,
        case
            when tenure_days <= {{ rules.new_customer_max_tenure_days }} then 'new_customers'
            when r_score >= {{ rules.champions.min_r }}
                and f_score >= {{ rules.champions.min_f }}
                and m_score >= {{ rules.champions.min_m }} then 'champions'
            when r_score >= {{ rules.loyal.min_r }}
                and f_score >= {{ rules.loyal.min_f }} then 'loyal'
            when r_score <= {{ rules.at_risk.max_r }}
                and (f_score >= {{ rules.at_risk.min_f }}
                    or m_score >= {{ rules.at_risk.min_m }}) then 'at_risk'
            when r_score <= {{ rules.hibernating.max_r }} then 'hibernating'
            else 'potential_loyalists'
        end as segment_id
    from features
),

catalogue (segment_id, segment_name, segment_description) as (
    values
        ('new_customers', 'New customers',
         'Joined in the last {{ rules.new_customer_max_tenure_days }} days; '
         || 'still forming a buying habit.'),
        ('champions', 'Champions',
         'Bought recently, buy often and spend the most; '
         || 'the best candidates for early access and loyalty rewards.'),
        ('loyal', 'Loyal customers',
         'Buy often and recently but spend less per year than champions.'),
        ('at_risk', 'At risk',
         'Used to buy often or spend a lot but have not bought for a long time.'),
        ('hibernating', 'Hibernating',
         'Low recency and low frequency or spend; long inactive.'),
        ('potential_loyalists', 'Potential loyalists',
         'Recent or mid-recency buyers with average frequency and spend; '
         || 'could become loyal with the right offer.')
)

select
    a.customer_id,
    a.segment_id,
    c.segment_name,
    c.segment_description
from assigned as a
join catalogue as c using (segment_id)
